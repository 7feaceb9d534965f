"""GIS products from a trained run: orthomosaics, DSM, classified LAZ, vectors, areas (rsseg-export-geo)."""
