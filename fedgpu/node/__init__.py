"""The volunteer node: pull a task, train on local data (with DP when asked), encrypt, sign, push."""

__all__: list[str] = []
