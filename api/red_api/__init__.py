"""Red's Federation API: each field declared once (spec.py), the CRD generated from it (crd.py), and the names
Red's parts agree on (names.py). No torch, numpy or Ray: the operator imports only this package of Red's."""
