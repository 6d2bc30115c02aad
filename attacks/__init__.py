"""attacks: adversarial attacks, transferability and the KL-divergence detection defense."""
