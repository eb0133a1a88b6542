"""Tests of the policy for mixed inputs (ntkcore._checks, module docstring): real numbers only, one reference array
per call, no silent moves between devices or casts between floating dtypes, explicit conversions allowed.

The device checks use the meta device, which exists in every torch build."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ntkcore import bounds, drift, kernels, langevin, models, predict, train
from ntkcore._checks import as_numpy, as_tensor, check_choice, check_int, check_real, inputs, labels, times

F32, F64 = torch.float32, torch.float64
META = torch.device("meta")


def _x(n=3, d=2, dtype=F64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------------- real numbers

@pytest.mark.parametrize("value, what", [
    ("1", "'1'"),
    (b"1", "b'1'"),
    (["1", "2"], "dtype <U1"),
    ([1.0, "2"], "dtype <U"),
    (None, "None"),
    ([1 + 2j, 0.0], "complex128"),
    (np.array([1, 2], dtype=object), "object"),
    ([1.0, None], "object"),
    ([[1.0, 2.0], [3.0]], "numpy cannot read"),
    (torch.ones(2, dtype=torch.complex64), "complex64"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64"),
])
def test_only_arrays_of_real_numbers(value, what):
    with pytest.raises(ValueError, match=f"x must be an array of real numbers .*got .*{what}"):
        as_tensor(value, "x")
    with pytest.raises(ValueError, match="x must be an array of real numbers"):
        as_numpy(value, "x")


def test_complex_and_strings_fail_at_the_public_functions_without_a_warning():
    k = np.eye(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "casting complex values to real" warning first
        with pytest.raises(ValueError, match="x1 must be an array of real numbers.*complex"):
            kernels.fc(np.ones((2, 2)) * (1 + 1j), depth=1)
        with pytest.raises(ValueError, match="k_train_train must be an array of real numbers.*complex"):
            predict.kernel_regression(k, torch.eye(2, dtype=torch.complex128), np.ones(2))
    with pytest.raises(ValueError, match="times must be an array of real numbers.*'1'"):
        predict.gradient_flow(k, np.ones(2), "1")  # a numeric string is not parsed
    with pytest.raises(ValueError, match="y must be an array of real numbers.*None"):
        predict.kernel_regression(k, k, None)
    with pytest.raises(ValueError, match="h must be an array of real numbers.*object"):
        bounds.interpolant_norm(np.array([[1, 0], [0, 1]], dtype=object), np.ones(2))


def test_bool_integer_and_float_arrays_are_real():
    assert as_tensor([True, False], "x").tolist() == [1.0, 0.0]
    assert as_tensor(np.arange(3, dtype=np.uint16), "x").dtype == F64
    assert as_tensor(np.ones(2, dtype=np.longdouble), "x").dtype == F64
    assert as_tensor(torch.arange(3), "x").dtype == F64  # an integer tensor as reference becomes float64
    assert as_tensor(torch.ones(2, dtype=F32), "x").dtype == F32  # a floating reference keeps its dtype


def test_hyper_parameters_are_python_or_numpy_real_numbers():
    assert check_real(np.float32(0.5), "ridge") == 0.5 and check_int(np.int64(3), "depth") == 3
    for bad in (True, np.bool_(True), "1", None, 1 + 0j, torch.tensor(1.0), np.array(1.0), float("nan")):
        with pytest.raises(ValueError, match="ridge must be a finite real number"):
            check_real(bad, "ridge")
    with pytest.raises(ValueError, match="ridge must be a finite real number, got an integer with 401 digits"):
        check_real(10**400, "ridge")  # beyond the float range: not an OverflowError
    for bad in (True, np.bool_(False), 2.0, "2", None):
        with pytest.raises(ValueError, match="depth must be an integer"):
            check_int(bad, "depth")
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match="depth must be an integer, got True"):
        kernels.fc(x, depth=True)
    with pytest.raises(ValueError, match="weight_var must be a finite real number, got '2'"):
        kernels.fc(x, depth=1, weight_var="2")
    assert predict.kernel_ridge(np.eye(2), np.eye(2), np.ones(2), np.float32(0.5)).dtype == F64


def test_choices_are_compared_by_type_and_value():
    assert check_choice("mse", "loss", ("mse", "cross_entropy")) == "mse"
    with pytest.raises(ValueError, match="loss=array"):
        check_choice(np.array(["mse", "mse"]), "loss", ("mse",))  # not an entrywise comparison
    with pytest.raises(ValueError, match="flag=1 is not known"):
        check_choice(1, "flag", (True, False))


# ---------------------------------------------------------------------------------------------------- dtypes

def test_floating_dtype_mismatch_names_both_dtypes():
    with pytest.raises(ValueError, match=r"x2 has dtype torch.float32 but x1 has dtype torch.float64; convert it "
                                         r"with x2.to\(torch.float64\)"):
        kernels.fc(_x(), _x(dtype=F32), depth=1)
    with pytest.raises(ValueError, match="y has dtype torch.float32 but k_train_train has dtype torch.float64"):
        predict.kernel_regression(torch.eye(2, dtype=F64), torch.eye(2, dtype=F64), torch.ones(2, dtype=F32))
    with pytest.raises(ValueError, match="k_test_train has dtype torch.float64 but k_train_train has dtype "
                                         "torch.float32"):
        predict.kernel_regression(torch.eye(2, dtype=F64), torch.eye(2, dtype=F32), np.ones(2))
    with pytest.raises(ValueError, match="residuals has dtype torch.float32 but h_star has dtype torch.float64"):
        bounds.descent_deviation_bound(torch.eye(2, dtype=F64), torch.ones(3, 2, dtype=F32), 0.1)
    with pytest.raises(ValueError, match="w has dtype torch.float32 but x1 has dtype torch.float64"):
        kernels.two_layer_empirical(_x(), w=torch.ones(4, 2, dtype=F32), a=np.ones(4))


def test_functions_of_a_model_take_the_parameters_as_reference():
    model = models.MLP(2, 8, 1, seed=0, dtype=F32)
    x, y = _x(4, 2), torch.ones(4, dtype=F64)
    with pytest.raises(ValueError, match="x has dtype torch.float64 but the model's parameters have dtype "
                                         "torch.float32"):
        train.fit(model, x, y.float(), steps=1)
    with pytest.raises(ValueError, match="y has dtype torch.float64 but the model's parameters have dtype"):
        train.fit(model, x.float(), y, steps=1)
    res = train.fit(model, x.numpy(), y.numpy(), steps=1)  # numpy carries no floating dtype: converted
    assert np.isfinite(res.train_loss).all()


def test_numpy_lists_and_integer_tensors_follow_the_reference():
    x32 = _x(dtype=F32)
    k = kernels.fc(x32, x32.double().numpy(), depth=1)
    assert k.ntk.dtype == F32
    torch.testing.assert_close(k.ntk, kernels.fc(x32, x32, depth=1).ntk)
    assert kernels.fc(x32, [[1, 0], [0, 1]], depth=1).nngp.dtype == F32
    assert kernels.fc(x32, torch.tensor([[1, 0]]), depth=1).nngp.dtype == F32  # integer tensor: converted
    kk = torch.eye(2, dtype=F32)
    assert predict.kernel_regression(kk, kk, [1, -1]).dtype == F32
    assert predict.kernel_regression(np.eye(2), np.eye(2), torch.tensor([True, False])).dtype == F64


def test_time_points_follow_the_reference_dtype():
    """A time grid from torch.linspace is float32 unless asked otherwise: times are coordinates, not data."""
    k = torch.eye(2, dtype=F64)
    flow = predict.gradient_flow(k, torch.ones(2, dtype=F64), torch.linspace(0, 1, 3))
    assert flow.train.dtype == F64
    assert times(torch.tensor([1.0], dtype=F64), "t", like=torch.ones(1, dtype=F32)).dtype == F32


def test_explicit_dtype_is_a_conversion_not_a_mix():
    t1, t2 = inputs(_x(dtype=F32), _x(dtype=F64), dtype=F64)
    assert t1.dtype == t2.dtype == F64
    assert labels(torch.ones(3, dtype=F32), 3, like=t1, dtype=F64).dtype == F64
    # float64 theory whatever the input (ntkcore.drift): float32 inputs, labels and lags are converted
    x32 = _x(4, 3, dtype=F32)
    hyper = dict(L=1, activation="relu", sigma_sq=1.0, T=0.5)
    out = drift.drift_predictor(x32, torch.ones(4, dtype=F32), x32, torch.tensor([0.0, 1.0]), **hyper)
    assert out.dtype == F64
    torch.testing.assert_close(out, drift.drift_predictor(x32.double(), torch.ones(4, dtype=F64), x32.double(),
                                                          [0.0, 1.0], **hyper))
    # Langevin simulates in its dtype (float32 by default): float64 inputs are converted
    res = langevin.simulate(_x(4, 3), torch.ones(4, dtype=F64), _x(2, 3), [0.0, 0.1], L=1, activation="relu",
                            width=4, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.05, n_networks=2)
    assert res.outputs_train.dtype == F32


# ---------------------------------------------------------------------------------------------------- devices

def test_device_mismatch_names_both_devices():
    with pytest.raises(ValueError, match=r"x2 is on meta but x1 is on cpu; move it with x2.to\('cpu'\)"):
        kernels.fc(_x(), torch.ones(2, 2, device=META), depth=1)
    with pytest.raises(ValueError, match="y is on meta but k_train_train is on cpu"):
        predict.gradient_flow(torch.eye(2), torch.ones(2, device=META), [1.0])
    with pytest.raises(ValueError, match="times is on meta but k_train_train is on cpu"):
        predict.gradient_flow(torch.eye(2), torch.ones(2), torch.ones(1, device=META))
    with pytest.raises(ValueError, match="y is on meta but h is on cpu"):
        bounds.interpolant_norm(torch.eye(2), torch.ones(2, device=META))
    with pytest.raises(ValueError, match="x_test is on meta but x_train is on cpu"):
        langevin.simulate(_x(4, 3), torch.ones(4), torch.ones(2, 3, device=META), [0.0], L=1, activation="relu",
                          width=4, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.05, n_networks=1)
    with pytest.raises(ValueError, match="tau is on meta but x1 is on cpu"):
        drift.drift_kernel(_x(4, 3), tau=torch.ones(2, device=META), L=1, activation="relu", sigma_sq=1.0, T=0.5)
    with pytest.raises(ValueError, match="eval_scores is on meta but scores are on cpu"):
        drift.threshold_accuracy(torch.ones(3), torch.ones(3), torch.ones(2, device=META), torch.ones(2))
    with pytest.raises(ValueError, match="x1 is a tensor on the meta device"):
        kernels.fc(torch.ones(2, 2, device=META), depth=1)


def test_device_mismatch_with_a_model():
    model = models.MLP(2, 4, 1, seed=0)
    for call in (lambda: train.fit(model, torch.ones(3, 2, device=META), np.ones(3), steps=1),
                 lambda: train.fit(model, np.ones((3, 2)), torch.ones(3, device=META), steps=1),
                 lambda: model(torch.ones(3, 2, device=META))):
        with pytest.raises(ValueError, match="is on meta but the model's parameters are on cpu"):
            call()
    with pytest.raises(ValueError, match="y is on meta but the model's parameters are on cpu"):
        train.fit(models.MLP(2, 4, 1, 3, seed=0), np.ones((3, 2)), torch.zeros(3, dtype=torch.long, device=META),
                  loss="cross_entropy", steps=1)


def test_integers_beyond_64_bits_are_value_errors():
    with pytest.raises(ValueError, match="depth must be <= 1000"):
        check_int(10**400, "depth", high=1000)
    with pytest.raises(ValueError, match="width must be <= 9223372036854775807, got an integer with 31 digits"):
        check_int(10**30, "width", low=1)
    with pytest.raises(ValueError, match="seed must be <= 9223372036854775807"):  # was: "Overflow when unpacking"
        models.MLP(3, 4, 1, seed=10**30)


def test_class_labels_are_whole_numbers_that_fit_64_bits():
    from ntkcore._checks import class_labels
    for bad in (np.array([0, 2**64 - 1], dtype=np.uint64), np.array([0.0, 1e308]), np.array([0.0, 1.5])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "invalid value encountered in cast" on the way
            with pytest.raises(ValueError, match="y must hold integer classes"):
                class_labels(bad, "y", 2)
    assert class_labels(np.array([1.0, 0.0]), "y", 2).tolist() == [1, 0]
