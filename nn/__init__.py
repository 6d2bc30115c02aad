"""nn: 8-bit quantized CNNs whose multiplications run through approximate-multiplier LUTs."""
