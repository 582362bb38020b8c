"""Where the examples come from: MNIST, the span store of labelled digits added later, and ExampleGen/SchemaGen."""
