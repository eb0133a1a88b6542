# The substitution u = sqrt(q) x, forgetting that the Hermite weight e^{-x^2} has variance 1/2, not 1.
def gauss_hermite_expectation(g, q, n=100):
    nodes, weights = np.polynomial.hermite.hermgauss(n)
    u = torch.as_tensor(math.sqrt(q) * nodes)
    return float((torch.as_tensor(weights) * g(u)).sum()) / math.sqrt(math.pi)
