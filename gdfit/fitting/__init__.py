"""What is fitted and how a step is taken: models (identity, expressions, matrix models), losses,
optimizers and steppers, and Levenberg-Marquardt with its trust region."""
