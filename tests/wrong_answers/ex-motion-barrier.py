# Frankle et al.'s excess over the mean of the ends, not over the chord.
def chord_barrier(alphas, values):
    v = np.asarray(values, dtype=float)
    return float(v.max() - 0.5 * (v[0] + v[-1]))
