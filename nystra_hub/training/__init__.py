"""Training the small reference models that make the quality measurements meaningful (``reference``); it is not
measurement, and nothing in inference or measurement imports it."""
