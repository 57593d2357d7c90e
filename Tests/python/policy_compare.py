"""Exact integer comparisons, as the UCAN policy language defines them over IPLD integers (arbitrary precision):
an independent reference for the Swift policy evaluator at every width boundary.

  policy_compare.py FILE   FILE holds JSON [[operator, value, bound], ...] with the integers as decimal strings;
                           prints JSON [true|false, ...] for `value operator bound`
"""
import json
import operator
import sys

OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
             ">=": operator.ge}

cases = json.load(open(sys.argv[1]))
print(json.dumps([OPERATORS[op](int(value), int(bound)) for op, value, bound in cases]))
