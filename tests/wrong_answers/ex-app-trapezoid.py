# Explicit in the current residual: the last trapezoidal weight multiplies r_{i-1} instead of the unknown r_i.
def volterra_residual(kernel, y, times):
    r = torch.empty_like(times)
    r[0] = y
    h = times.diff()
    for i in range(1, len(times)):
        w = torch.zeros(i + 1, dtype=times.dtype)
        w[:-1] += h[:i] / 2
        w[1:] += h[:i] / 2
        kw = kernel(float(times[i]), times[: i + 1]) * w
        r[i] = y - (kw[:-1] * r[:i]).sum() - kw[-1] * r[i - 1]
    return r
