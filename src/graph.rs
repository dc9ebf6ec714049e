//! The dependency graph over resource addresses: edges come from references between
//! resources. Apply walks it forwards, destroy in reverse; a cycle is an error naming it.

use std::collections::{BTreeMap, BTreeSet};

use crate::vocab::resources::{Address, Stack};

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// address → the addresses it depends on (only those present in the graph).
    dependencies: BTreeMap<Address, BTreeSet<Address>>,
    /// address → the addresses that depend on it.
    dependents: BTreeMap<Address, BTreeSet<Address>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle: {}", .cycle.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" -> "))]
pub struct CycleError {
    /// The addresses on the cycle, the first repeated at the end.
    pub cycle: Vec<Address>,
}

impl Graph {
    pub fn from_stack(stack: &Stack) -> Result<Self, CycleError> {
        Self::from_edges(
            stack
                .resources
                .iter()
                .map(|r| (r.address.clone(), r.depends_on.clone())),
        )
    }

    /// Builds a graph from (node, its dependencies); dependencies on unknown nodes are ignored
    /// (the stack loader reports those as undefined references).
    pub fn from_edges(
        nodes: impl IntoIterator<Item = (Address, Vec<Address>)>,
    ) -> Result<Self, CycleError> {
        let nodes: Vec<(Address, Vec<Address>)> = nodes.into_iter().collect();
        let mut g = Graph::default();
        for (a, _) in &nodes {
            g.dependencies.entry(a.clone()).or_default();
            g.dependents.entry(a.clone()).or_default();
        }
        for (a, deps) in nodes {
            for d in deps {
                if d != a && g.dependencies.contains_key(&d) {
                    g.dependencies
                        .entry(a.clone())
                        .or_default()
                        .insert(d.clone());
                    g.dependents.entry(d).or_default().insert(a.clone());
                } else if d == a {
                    return Err(CycleError {
                        cycle: vec![a.clone(), a],
                    });
                }
            }
        }
        g.check_acyclic()?;
        Ok(g)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Address> {
        self.dependencies.keys()
    }

    pub fn contains(&self, a: &Address) -> bool {
        self.dependencies.contains_key(a)
    }

    pub fn dependencies(&self, a: &Address) -> impl Iterator<Item = &Address> {
        self.dependencies.get(a).into_iter().flatten()
    }

    pub fn dependents(&self, a: &Address) -> impl Iterator<Item = &Address> {
        self.dependents.get(a).into_iter().flatten()
    }

    /// Every node reachable through dependents (what a change to `a` can affect), excluding `a`.
    pub fn transitive_dependents(&self, a: &Address) -> BTreeSet<Address> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Address> = self.dependents(a).collect();
        while let Some(n) = stack.pop() {
            if seen.insert(n.clone()) {
                stack.extend(self.dependents(n));
            }
        }
        seen
    }

    /// Dependencies before dependents; ties in address order, so the order is stable.
    pub fn topo_order(&self) -> Vec<Address> {
        let mut remaining: BTreeMap<&Address, usize> = self
            .dependencies
            .iter()
            .map(|(a, d)| (a, d.len()))
            .collect();
        let mut ready: BTreeSet<&Address> = remaining
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(a, _)| *a)
            .collect();
        let mut order = Vec::with_capacity(remaining.len());
        while let Some(a) = ready.pop_first() {
            remaining.remove(a);
            order.push(a.clone());
            for d in self.dependents(a) {
                if let Some(n) = remaining.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(d);
                    }
                }
            }
        }
        order
    }

    /// Dependents before dependencies (destroy order).
    pub fn reverse_topo_order(&self) -> Vec<Address> {
        let mut o = self.topo_order();
        o.reverse();
        o
    }

    fn check_acyclic(&self) -> Result<(), CycleError> {
        // Depth-first search with colours; the grey path at a back edge is the cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Colour {
            White,
            Grey,
            Black,
        }
        let mut colour: BTreeMap<&Address, Colour> = self
            .dependencies
            .keys()
            .map(|a| (a, Colour::White))
            .collect();
        for start in self.dependencies.keys() {
            if colour[start] != Colour::White {
                continue;
            }
            let mut path: Vec<&Address> = vec![start];
            let mut iters: Vec<std::collections::btree_set::Iter<'_, Address>> =
                vec![self.dependencies[start].iter()];
            colour.insert(start, Colour::Grey);
            while let Some(it) = iters.last_mut() {
                match it.next() {
                    Some(next) => match colour[next] {
                        Colour::White => {
                            colour.insert(next, Colour::Grey);
                            path.push(next);
                            iters.push(self.dependencies[next].iter());
                        }
                        Colour::Grey => {
                            let from = path.iter().position(|a| *a == next).unwrap_or(0);
                            let mut cycle: Vec<Address> =
                                path[from..].iter().map(|a| (*a).clone()).collect();
                            cycle.push(next.clone());
                            return Err(CycleError { cycle });
                        }
                        Colour::Black => {}
                    },
                    None => {
                        iters.pop();
                        if let Some(done) = path.pop() {
                            colour.insert(done, Colour::Black);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::Kind;

    fn addr(kind: Kind, name: &str) -> Address {
        Address {
            kind,
            name: name.into(),
            key: None,
        }
    }

    #[test]
    fn topo_order_puts_dependencies_first_and_reverse_puts_them_last() {
        let c = addr(Kind::Cluster, "serving");
        let m = addr(Kind::Model, "regression");
        let s = addr(Kind::Serving, "tf");
        let l = addr(Kind::Loadtest, "baseline");
        let g = Graph::from_edges([
            (l.clone(), vec![s.clone(), c.clone()]),
            (s.clone(), vec![c.clone(), m.clone()]),
            (c.clone(), vec![]),
            (m.clone(), vec![]),
        ])
        .unwrap();
        let order = g.topo_order();
        let pos = |a: &Address| order.iter().position(|x| x == a).unwrap();
        assert!(pos(&c) < pos(&s) && pos(&m) < pos(&s) && pos(&s) < pos(&l));
        assert_eq!(g.reverse_topo_order().first(), Some(&l));
        assert_eq!(
            g.transitive_dependents(&m),
            [s.clone(), l.clone()].into_iter().collect()
        );
    }

    #[test]
    fn a_cycle_is_named_from_start_to_start() {
        let a = addr(Kind::Serving, "a");
        let b = addr(Kind::Loadtest, "b");
        let err = Graph::from_edges([(a.clone(), vec![b.clone()]), (b.clone(), vec![a.clone()])])
            .unwrap_err();
        assert_eq!(err.cycle.first(), err.cycle.last());
        assert_eq!(err.cycle.len(), 3);
        assert!(err.to_string().contains("serving.a") && err.to_string().contains("loadtest.b"));
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let a = addr(Kind::Serving, "a");
        assert!(Graph::from_edges([(a.clone(), vec![a.clone()])]).is_err());
    }
}
