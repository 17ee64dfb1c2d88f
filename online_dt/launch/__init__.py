"""What a run needs before its loop starts: the run directory, the prompt set and the preflight
checks of its inputs.
"""
