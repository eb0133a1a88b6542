# Missing results left out of the ranking (each row ranked over the results it has) instead of ranked last: a
# classifier gains by failing where others succeed.
from scipy.stats import rankdata


def mean_ranks(accuracy):
    ranks = np.full(accuracy.shape, np.nan)
    for i, row in enumerate(accuracy):
        present = ~np.isnan(row)
        ranks[i, present] = rankdata(-row[present])
    return np.nanmean(ranks, axis=0)
