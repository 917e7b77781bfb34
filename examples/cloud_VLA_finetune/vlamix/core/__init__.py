"""The ground floor of vlamix: constants, errors, file I/O, name registries, LIBERO suite names, labels,
and the field roles every configuration section is declared with. Imports nothing above itself."""
