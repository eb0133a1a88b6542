# The weight correlation e^(-gamma tau) multiplies the NNGP kernel instead of the pre-activation covariance.
def relu_drift_kernel(x1, x2, tau, sigma_sq, T):
    n0 = x1.shape[1]
    var1, var2 = sigma_sq * (x1 * x1).sum(1) / n0, sigma_sq * (x2 * x2).sum(1) / n0
    scale = torch.sqrt(var1[:, None] * var2[None, :])
    theta = torch.arccos((sigma_sq * (x1 @ x2.T / n0) / scale).clamp(-1.0, 1.0))
    k_gp = scale / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
    return torch.exp(-T / sigma_sq * tau)[:, None, None] * k_gp
