"""The environments: the core lock and its check, the setup scripts' final checks, and the platform that every
result's provenance names."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest

from vlm4vla_core import lock

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ["calvin", "libero", "lmms", "simpler"]


# -- the core lock ------------------------------------------------------------------------------------------------
def test_lock_pins_every_package_with_hashes_but_torch():
    pins = lock.read_lock()
    text = lock.LOCK.read_text()
    assert "torch" not in pins and pins["transformers"] and pins["deepspeed"]
    # each pin is followed by its hashes: pip's --require-hashes accepts the file
    blocks = [b for b in text.split("\n") if b and not b.startswith((" ", "#"))]
    assert len(blocks) == len(pins) and text.count("--hash=sha256:") >= len(pins)
    assert "torchvision" not in pins, "the core environment never gets torchvision"


def test_conda_environment_names_the_lock_hash():
    """envs/vlm4vla.yaml records the lock's sha256 (make lock writes it), so a new lock rebuilds that environment."""
    line = next(l for l in (ROOT / "envs" / "vlm4vla.yaml").read_text().splitlines() if l.startswith("# lock sha256:"))
    assert line.split(":", 1)[1].strip() == lock.lock_sha256() == hashlib.sha256(lock.LOCK.read_bytes()).hexdigest()


def test_lock_check_reports_differences(tmp_path):
    (tmp_path / "lock.txt").write_text("# made by uv\nfoo-bar==1.0 \\\n    --hash=sha256:00\nbaz==2.0\n")
    pins = lock.read_lock(tmp_path / "lock.txt")
    assert pins == {"foo-bar": "1.0", "baz": "2.0"}
    have = {"foo-bar": "1.0", "baz": "2.1", "torch": "2.13.0+cpu", "extra": "0.1"}
    assert lock.differences(pins, have, "2.13.0") == [("baz", "2.0", "2.1")]
    assert lock.differences(pins, {"baz": "2.0"}, "2.13.0") == [("foo-bar", "1.0", "-"), ("torch", "2.13.0", "-")]
    assert lock.extras(pins, have) == [("extra", "0.1")]
    assert lock.normalize("Typing_Extensions") == "typing-extensions"
    (tmp_path / "bad.txt").write_text("foo>=1\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: not an exact pin"):
        lock.read_lock(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="make lock"):
        lock.read_lock(tmp_path / "none.txt")
    assert lock.torch_pin() == "2.13.0"


def test_lock_check_exit_codes(tmp_path, capsys):
    (tmp_path / "lock.txt").write_text("no-such-package-here==1.0 \\\n    --hash=sha256:00\n")
    assert lock.main(["--lock", str(tmp_path / "lock.txt")]) == 1
    assert "no-such-package-here: locked 1.0, installed -" in capsys.readouterr().err
    assert lock.main(["--lock", str(tmp_path / "lock.txt"), "--drift"]) == 0
    assert "no-such-package-here" in capsys.readouterr().out
    assert lock.main(["--lock", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: no lock file" in capsys.readouterr().err


# -- the setup scripts' final checks ------------------------------------------------------------------------------
def _fake_env(path: Path) -> Path:
    """A stand-in environment whose python records where and how it ran, then succeeds."""
    (path / "bin").mkdir(parents=True)
    python = path / "bin" / "python"
    python.write_text('#!/usr/bin/env bash\necho "$PWD $*" >> "$(dirname "$0")/../calls.log"\ncat > /dev/null\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return path / "calls.log"


@pytest.mark.parametrize("name", SETUPS)
@pytest.mark.parametrize("absolute", [False, True])
def test_setup_check_runs_with_relative_and_absolute_env_paths(tmp_path, name, absolute):
    calls = _fake_env(tmp_path / "env")
    work = tmp_path / "elsewhere"
    work.mkdir()
    venv = str(tmp_path / "env") if absolute else "../env"
    run = subprocess.run([str(ROOT / "envs" / f"check-{name}-venv.sh"), venv], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert calls.read_text().strip(), "the check never ran the environment's python"
    # and each setup script ends with that check on the folder it was given
    assert f'"$repo/envs/check-{name}-venv.sh" "$venv"' in (ROOT / "envs" / f"setup-{name}-venv.sh").read_text()


def test_setup_check_refuses_a_folder_without_python(tmp_path):
    run = subprocess.run([str(ROOT / "envs" / "check-calvin-venv.sh"), "nothing"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 1 and "nothing has no bin/python" in run.stderr


# -- the platform in a result's provenance ------------------------------------------------------------------------
def test_provenance_names_the_platform_and_the_lock():
    import torch

    from vlm4vla_core.provenance import provenance

    prov = provenance({"a": 1})
    hw = prov["hardware"]
    assert hw["cpu_model"] and hw["cpu_model"] != "unknown" or not Path("/proc/cpuinfo").is_file()
    assert hw["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert hw["torch_threads"] == torch.get_num_threads() and hw["torch_interop_threads"] >= 1
    assert hw["torch_build"]["blas"] and hw["torch_build"]["onednn"] is not None
    assert hw["cuda_available"] is torch.cuda.is_available()
    from vlm4vla_core.provenance import platform_id

    assert hw["platform_id"] == platform_id(hw) != platform_id(dict(hw, torch_threads=hw["torch_threads"] + 1))
    assert prov["lock"]["sha256"] == lock.lock_sha256() and prov["lock"]["file"] == "envs/vlm4vla-lock.txt"
    assert isinstance(prov["lock"]["matches"], bool)


def test_cpu_model_and_torch_build_parsing(tmp_path):
    from vlm4vla_core.provenance import cpu_model, torch_build

    (tmp_path / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core\n")
    assert cpu_model(tmp_path / "cpuinfo") == "AMD EPYC 9654 96-Core"
    show = ("PyTorch built with:\n  - GCC 13.3\n  - Intel(R) oneAPI Math Kernel Library Version 2024.2\n"
            "  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71)\n  - OpenMP 201511 (a.k.a. OpenMP 4.5)\n"
            "  - CPU capability usage: AVX512\n  - Build settings: BLAS_INFO=mkl, COMMIT_SHA=cf30153, LAPACK_INFO=mkl, \n")
    build = torch_build(show)
    assert build == {"torch_commit": "cf30153", "blas": "mkl", "lapack": "mkl",
                     "mkl": "Intel(R) oneAPI Math Kernel Library Version 2024.2",
                     "onednn": "Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71)", "openmp": "OpenMP 201511 (a.k.a. OpenMP 4.5)",
                     "built_capability": "CPU capability usage: AVX512"}


def test_provenance_names_the_accelerator_and_driver_where_one_is_used(monkeypatch):
    """On a GPU node (simulated here: no accelerator on the test machines) the GPUs, CUDA and the driver are named."""
    import torch

    from vlm4vla_core import provenance as prov

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H200 #{i}")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    monkeypatch.setattr(prov, "_nvidia_driver", lambda: "580.65.06")
    hw = prov.hardware()
    assert hw["gpus"] == ["NVIDIA H200 #0", "NVIDIA H200 #1"] and hw["driver_version"] == "580.65.06"
    assert hw["cudnn_version"] == 91000 and "cuda_version" in hw
    cpu_only = dict(hw, gpus=None, driver_version=None, cuda_version=None)
    assert prov.platform_id(hw) != prov.platform_id(cpu_only)


@pytest.mark.parametrize("name,conda", [("calvin", "calvin"), ("libero", "libero"), ("simpler", "simpler"),
                                        ("lmms-eval", "lmms-eval")])
def test_other_environments_pin_exactly_one_list(name, conda):
    """Each simulator and the lmms-eval environment: exact pins (name==version) in envs/<name>-requirements.txt,
    and its conda file repeats the same list."""
    import yaml

    reqs = [line.split("#", 1)[0].strip() for line in (ROOT / "envs" / f"{name}-requirements.txt").read_text().splitlines()]
    reqs = [line for line in reqs if line]
    assert reqs and all("==" in line and not any(op in line.split("==", 1)[0] for op in "<>~") for line in reqs), reqs
    deps = yaml.safe_load((ROOT / "envs" / f"{conda}.yaml").read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == reqs
