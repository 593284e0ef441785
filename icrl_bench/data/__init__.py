"""Learning-history datasets: recipes, ids, the Zarr store, building, reading, importing."""
