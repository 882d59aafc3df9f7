"""Counter-based randomness for S2 and S3: Philox2x64-10 bits, stream derivation, exact variates, the RNG ledger."""
