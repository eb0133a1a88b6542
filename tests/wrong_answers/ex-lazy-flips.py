# The share of units that flip on at least one input, instead of the fraction of the pairs (r, i) that flip.
def flip_fraction(w0, w, x):
    return float(((x @ w0.T > 0) != (x @ w.T > 0)).any(dim=0).double().mean())
