//! Money: model prices and request cost (the key vending machine and revenue ledger land here).

pub mod prices;
