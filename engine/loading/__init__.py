"""Model loading: GGUF files converted to mlx-lm model folders, and where they live.

Kept free of MLX imports at package level: ``engine.fastblas`` reads ``paths`` before MLX loads.
"""
