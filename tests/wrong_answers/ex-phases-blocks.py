# The diagonal left out of the same-class blocks: a mean over the off-diagonal same-class pairs only.
def block_means(kernel, labels):
    k, y = np.asarray(kernel, dtype=float), np.asarray(labels)
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    other = y[:, None] != y[None, :]
    return float(np.diag(k).mean()), float(k[same].mean()), float(k[other].mean())
