"""Review a change before it reaches the cluster (`make diff`): the chart's objects rendered
from the base and from the working tree, compared as helm-diff prints them, with the capacity
consequence; and the pull request comment that carries the report (comment.py, standard library
only, so the comment job needs no install).
"""
