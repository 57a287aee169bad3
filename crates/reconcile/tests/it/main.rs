//! reconcile's tests: the rules and their safety properties with mockall
//! mocks of the traits, plain-data cases for the decision, and the start-up
//! sweep against a real lock held by another process.

mod children;
mod decision;
mod economy;
mod json;
mod rules;
mod safety;
mod startup;
mod support;
