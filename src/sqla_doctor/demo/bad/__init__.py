"""The bookstore and users/orders app of the seed articles, with their pitfalls left in."""
