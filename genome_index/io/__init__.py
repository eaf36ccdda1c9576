"""Files in and out, below everything else: FASTA genomes read, checked and normalised (`fasta`),
sequence packed two bits a base (`sequences`), and label CSVs (`labels`)."""
