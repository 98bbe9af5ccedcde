"""`dc3ray.core` stays Ray-free: importing every core module must not import ray or mlflow."""
import subprocess
import sys


def test_core_modules_do_not_import_ray_or_mlflow():
    code = (
        "import importlib, pkgutil, sys\n"
        "import dc3ray.core as c, dc3ray.config\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('dc3ray.core.' + m.name)\n"
        "bad = [n for n in ('ray', 'mlflow') if n in sys.modules]\n"
        "assert not bad, bad\n"
        "print(len(list(pkgutil.iter_modules(c.__path__))))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) >= 6


def test_the_student_loop_imports_without_ray_or_mlflow():
    """benchmarks/gpu_student.py runs it on GPU machines where Ray is not installed."""
    code = ("import sys\n"
            "import dc3ray.pipeline.student\n"
            "bad = [n for n in ('ray', 'mlflow') if n in sys.modules]\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
