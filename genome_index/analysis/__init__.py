"""What a store or a set of genomes says as a whole: genome-by-genome comparison (`compare`),
which model and layer separate a label (`evaluate`), ANI with skani (`ani`), and the figures
(`plots`)."""
