"""The control-based representations of the source text, one file each. Each registers
itself when imported; :func:`ssrl.representations.get` imports a method's module on first use,
so importing this package loads none of them."""
