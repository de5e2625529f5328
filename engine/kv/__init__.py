"""K/V storage: the slab behind the pool's blocks, writing turns into blocks, spill files, residency."""
