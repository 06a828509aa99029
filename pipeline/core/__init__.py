"""Generic pieces every layer above may use: errors, files, fingerprints, the console, locks,
the work dir and the Beam settings."""
