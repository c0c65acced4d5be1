package store

// Translate exposes translate to the tests.
var Translate = translate
