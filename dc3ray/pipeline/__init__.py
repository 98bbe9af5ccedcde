"""Thin Ray adapters around dc3ray.core: resources, stages and the drivers that wire them."""
