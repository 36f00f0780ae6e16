"""The ML team's job driver: submit, decrypt cohort sums, aggregate, evaluate, value, publish."""

__all__: list[str] = []
