"""The paper's experiments (tables II-V) as lists of real nnU-Net commands: see ``protocols``."""
