"""Spec files in: loading, schemas and the expression language.

``load`` turns untrusted YAML into located data; ``listed_layers`` and ``precheck`` refuse or
accept a document cheaply before ``schema`` validates it against the JSON Schemas generated from
the op registry; ``kinds`` lets other distributions add spec kinds; ``expr`` evaluates the
arithmetic written in fields.
"""
