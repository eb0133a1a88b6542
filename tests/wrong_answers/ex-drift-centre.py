# Each set centred at its own mean: the held-out images are centred at the mean held-out image, not the training one.
def centred_long_lag_accuracy(x, y, xt, yt):
    xc, xtc = x - x.mean(0), xt - xt.mean(0)
    s = (xc.norm(dim=1) ** 2 / xc.shape[1]).mean().sqrt()
    xc, xtc = xc / s, xtc / s
    h = dict(activation="relu", **hyper_digits)
    return float(drift.threshold_accuracy(drift.drift_limit(xc, y, xc, **h), y, drift.drift_limit(xc, y, xtc, **h), yt))
