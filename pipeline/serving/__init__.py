"""A served model as its clients use it: found in the serving directory, loaded, and asked
for predictions on image files through its own serving signature."""
