# The second graph's aggregation matrix not transposed: M K M' instead of M K M'^T.
def aggregate_kernel(k, a1, a2, normalize=None):
    if normalize == "degree":
        a1, a2 = a1 / a1.sum(1, keepdim=True), a2 / a2.sum(1, keepdim=True)
    return a1 @ k @ a2
