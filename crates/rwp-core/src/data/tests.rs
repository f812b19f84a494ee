// data tests
