# Contiguous blocks of the shuffled indices, not stratified: a partition, but the classes are not spread evenly.
def stratified_folds(y, k, seed=0):
    order = np.random.default_rng(seed).permutation(len(y))
    return [np.sort(block).astype(np.int64) for block in np.array_split(order, k)]
