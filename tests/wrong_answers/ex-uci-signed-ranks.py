# Zero differences ranked along with the others instead of dropped first: every rank is shifted up by the number of
# zeros, and the two sums no longer add up to m(m + 1)/2.
from scipy.stats import rankdata


def signed_ranks(diff):
    d = np.asarray(diff, dtype=float)
    ranks = rankdata(np.abs(d))
    return float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
