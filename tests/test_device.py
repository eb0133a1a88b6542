import numpy as np
import pytest
import torch

from ntkcore import device
from ntkcore._checks import as_tensor, check_choice, check_int, check_real, generator


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)


def test_default_is_cpu_float64():
    assert device.resolve() == (torch.device("cpu"), torch.float64)


def test_argument_wins_over_environment(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "auto")
    assert device.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
def test_environment_variable(monkeypatch, name):
    monkeypatch.setenv(device.ENV_VAR, name)
    assert device.resolve_device() == torch.device("cpu")


def test_auto_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.resolve_device().type == expected
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert device.resolve_device("auto") == torch.device("cpu")


def test_cuda_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA.*'auto'"):
        device.resolve_device("cuda")
    monkeypatch.setenv(device.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match=r"\$NTKCORE_DEVICE"):
        device.resolve_device()


@pytest.mark.parametrize("bad", ["gpu", "tpu", "cuda:x", 3])
def test_unknown_device(bad):
    with pytest.raises(ValueError, match="device"):
        device.resolve_device(bad)


def test_dtypes():
    assert device.resolve_dtype("float32") == torch.float32
    assert device.resolve_dtype(np.float64) == torch.float64
    assert device.resolve_dtype(torch.float32) == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        device.resolve_dtype("int64")
    with pytest.raises(ValueError, match="dtype"):
        device.resolve_dtype(torch.int32)


def test_available_devices_and_describe():
    devs = device.available_devices()
    assert devs[0] == "cpu" and set(devs) <= {"cpu", "cuda"}
    assert "cpu" in device.describe("cpu")


def test_as_tensor_follows_input_and_rejects_bad_values():
    t = torch.ones(3, 2, dtype=torch.float32)
    assert as_tensor(t, "x").dtype == torch.float32
    a = as_tensor(np.ones((3, 2)), "x", ndim=2)
    assert a.dtype == torch.float64 and a.device.type == "cpu"
    with pytest.raises(ValueError, match="x1 contains NaN"):
        as_tensor([[1.0, float("nan")]], "x1")
    with pytest.raises(ValueError, match="x2 must have 2 dimension"):
        as_tensor(np.ones(3), "x2", ndim=2)
    with pytest.raises(ValueError, match="labels must be an array"):
        as_tensor({"a": 1}, "labels")


def test_scalar_checks():
    assert check_real(0.5, "p", low=0, high=1, high_open=True) == 0.5
    with pytest.raises(ValueError, match="p must be < 1"):
        check_real(1.0, "p", low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match="weight_var must be >= 0"):
        check_real(-1, "weight_var", low=0)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        check_int(-1, "depth", low=0)
    with pytest.raises(ValueError, match="depth must be an integer"):
        check_int(1.5, "depth")
    with pytest.raises(ValueError, match="activation='tanhh' is not known; accepted: 'relu'"):
        check_choice("tanhh", "activation", ("relu", "erf"))


def test_generator_is_deterministic():
    a = torch.randn(4, generator=generator(7))
    b = torch.randn(4, generator=generator(7))
    assert torch.equal(a, b)
    g = torch.Generator()
    assert generator(g) is g
    with pytest.raises(ValueError, match="seed"):
        generator(-1)
