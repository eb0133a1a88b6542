# Differentiates sigma^2 K^L(tau) alone: the factor e^(-gamma tau) of the output covariance C is forgotten.
def fdt_kernel(x, tau, L, activation, sigma_sq, T):
    h = 1e-4

    def covariance(lags):
        return sigma_sq * ndk.stationary_kernels(x, tau=lags, L=L, activation=activation, sigma_sq=sigma_sq, T=T).nngp

    return -(covariance(tau + h) - covariance(tau - h)) / (2 * h) / T
