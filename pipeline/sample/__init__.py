"""Sample data: generated releases in the public layouts, behind `medtfx data synth`, and the
sample a run uses when no data root is given. Only the operations, the command line and the
tests import it."""
