//! Every hostile or merely different server the firewall must hold on, in one place: a
//! neighbour on the shared joint server, a writer on the retail server who wants verify
//! to pass, a server set up differently (collations, TLS), and what could carry a value
//! or a password into a message. Each test is the attack next to the guarantee it
//! breaks; each fails on a shadan without the matching defence.

mod collation;
mod messages;
mod neighbour;
mod retail_writer;
