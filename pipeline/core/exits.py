"""The exit statuses of every command, which the use cases below the command line return."""

EXIT_FAILED = 1  # the run or the data failed
EXIT_USAGE = 2  # the command line or the config is wrong
# With --strict: the run finished and pushed nothing (its model was not blessed, or failed
# the load check).
EXIT_NOT_PUSHED = 3
EXIT_DRIFT = 3  # `medtfx monitor`: a check of the logged requests is beyond its bound
