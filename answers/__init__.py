"""
answers/: the answer parsing reward.py's verdict rests on. forms.py reads a short math answer into
a form (numbers, expressions, units, labels); compare.py compares two forms (and asks the optional
math_verify package where its verdict is sound). Standard library only: copy the folder anywhere.
"""
