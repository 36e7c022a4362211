//! What a build tries, and in which order, decided from what it found
//! before doing anything: a pure function, unit-tested branch by branch
//! without a server (issue #23). `engine::build_locked` gathers the
//! `Found` facts (the key's template, its own snapshot in the cache dir,
//! the request) and runs the steps one after another; a step that cannot
//! serve (a damaged dump, a base Django says does not fit) hands over to
//! the next one.

use crate::pg::admin::TemplateState;

/// The key's own snapshot in the cache dir, as the build found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// None (or unreadable, or its recorded inputs changed since).
    Absent,
    /// Its recorded inputs hold, but a newer PostgreSQL than this server
    /// dumped it: its SQL may not load here.
    TooNew,
    /// Its recorded inputs hold and this server can load it.
    Usable,
}

/// What the build found, before doing anything.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// `--rebuild`: ignore templates and snapshots, migrate from empty.
    pub rebuild: bool,
    /// Background work: only the key's own snapshot may serve; never
    /// start Django.
    pub cache_only: bool,
    /// The database under the key's template name.
    pub template: TemplateState,
    /// `trust-unsigned`: a template restored from a foreign snapshot serves.
    pub trust_unsigned: bool,
    /// The key's own snapshot in the cache dir.
    pub own: Own,
    /// The cache dir holds a snapshot whose recorded inputs hold now (so a
    /// template that does not serve is worth a warning).
    pub inputs_recorded: bool,
    /// A snapshot store is configured.
    pub store: bool,
}

/// One way of getting the key's template, in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The template is there and serves (another process finished it
    /// while this one waited for the lock): nothing to build.
    Ready,
    /// A database that migsnap did not make has the template's name:
    /// refuse, never replace it.
    RefuseNotOurs,
    /// Restore the key's own dump from the cache dir.
    RestoreOwn,
    /// Download the key's own snapshot from the store and restore it.
    RestoreFromStore,
    /// Nothing of the key's own could be restored, and the request may
    /// not migrate: an error.
    NothingCached,
    /// Build on the best older snapshot (the cache dir's or the store's):
    /// its template or dump, then `migrate` forward. For `prepare --at`,
    /// one of the cache dir's that Django finds the targets are reached
    /// from as from empty (`django::choose_base`).
    Ancestor,
    /// `migrate` from an empty database.
    Cold,
}

/// What a build will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// Say that the template there does not match the key's recorded
    /// inputs, and is rebuilt.
    pub warn_stale_template: bool,
    /// Tried in order until one serves; the last one always ends the build.
    pub steps: Vec<Step>,
}

/// The steps for what was `found`.
pub fn plan(found: &Found) -> BuildPlan {
    let mut warn = false;
    let mut steps = vec![];
    if found.template == TemplateState::NotOurs {
        return BuildPlan {
            warn_stale_template: false,
            steps: vec![Step::RefuseNotOurs],
        };
    }
    if !found.rebuild && found.template != TemplateState::Missing {
        if found.template.serves(found.trust_unsigned) {
            return BuildPlan {
                warn_stale_template: false,
                steps: vec![Step::Ready],
            };
        }
        // Without recorded inputs there is nothing it could have matched.
        warn = found.inputs_recorded;
    }
    if !found.rebuild {
        if found.own == Own::Usable {
            steps.push(Step::RestoreOwn);
        }
        if found.store {
            steps.push(Step::RestoreFromStore);
        }
        if found.cache_only {
            steps.push(Step::NothingCached);
            return BuildPlan {
                warn_stale_template: warn,
                steps,
            };
        }
        steps.push(Step::Ancestor);
    }
    steps.push(Step::Cold);
    BuildPlan {
        warn_stale_template: warn,
        steps,
    }
}

/// After a restore of the key's own dump: put it straight into the
/// caller's target, or make it the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRestore {
    /// Rename the restore into the target's place; the template follows
    /// in the background.
    HandOut,
    /// Promote it to the template (everyone clones it).
    Promote,
}

/// `hand_out_asked`: the request names a target the restore may go to;
/// `others_waiting`: how many other processes wait for this key's template
/// (they would wait for nothing if the restore went to one target).
pub fn after_restore(hand_out_asked: bool, others_waiting: i64) -> AfterRestore {
    if hand_out_asked && others_waiting == 0 {
        AfterRestore::HandOut
    } else {
        AfterRestore::Promote
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    fn found() -> Found {
        Found {
            rebuild: false,
            cache_only: false,
            template: TemplateState::Missing,
            trust_unsigned: false,
            own: Own::Absent,
            inputs_recorded: false,
            store: false,
        }
    }

    fn steps(f: Found) -> Vec<Step> {
        plan(&f).steps
    }

    #[test]
    fn a_database_migsnap_did_not_make_is_never_replaced() {
        for rebuild in [false, true] {
            let f = Found {
                template: TemplateState::NotOurs,
                rebuild,
                own: Own::Usable,
                ..found()
            };
            assert_eq!(steps(f), [RefuseNotOurs]);
        }
    }

    #[test]
    fn a_template_that_serves_needs_nothing_unless_rebuilt() {
        let ready = Found {
            template: TemplateState::Ready { foreign: false },
            own: Own::Usable,
            ..found()
        };
        assert_eq!(plan(&ready).steps, [Ready]);
        assert!(!plan(&ready).warn_stale_template);
        let rebuild = Found {
            rebuild: true,
            ..ready
        };
        assert_eq!(
            steps(rebuild),
            [Cold],
            "--rebuild ignores templates and snapshots"
        );
    }

    #[test]
    fn a_foreign_template_serves_only_while_unsigned_snapshots_are_trusted() {
        let foreign = Found {
            template: TemplateState::Ready { foreign: true },
            inputs_recorded: true,
            own: Own::Usable,
            ..found()
        };
        let trusted = Found {
            trust_unsigned: true,
            ..foreign
        };
        assert_eq!(steps(trusted), [Ready]);
        let p = plan(&foreign);
        assert_eq!(p.steps, [RestoreOwn, Ancestor, Cold]);
        assert!(p.warn_stale_template);
    }

    #[test]
    fn a_stale_template_is_rebuilt_with_a_warning_only_when_inputs_are_recorded() {
        let stale = Found {
            template: TemplateState::Stale,
            ..found()
        };
        assert!(!plan(&stale).warn_stale_template, "nothing it could match");
        let recorded = Found {
            inputs_recorded: true,
            ..stale
        };
        assert!(plan(&recorded).warn_stale_template);
        assert!(
            !plan(&Found {
                rebuild: true,
                ..recorded
            })
            .warn_stale_template,
            "--rebuild asked for it"
        );
        assert_eq!(steps(recorded), [Ancestor, Cold]);
    }

    #[test]
    fn the_own_dump_comes_first_then_the_store_then_an_ancestor_then_empty() {
        let all = Found {
            own: Own::Usable,
            store: true,
            ..found()
        };
        assert_eq!(steps(all), [RestoreOwn, RestoreFromStore, Ancestor, Cold]);
        let no_store = Found {
            store: false,
            ..all
        };
        assert_eq!(steps(no_store), [RestoreOwn, Ancestor, Cold]);
        for own in [Own::Absent, Own::TooNew] {
            assert_eq!(
                steps(Found { own, ..all }),
                [RestoreFromStore, Ancestor, Cold],
                "{own:?} is not restored"
            );
        }
        assert_eq!(steps(found()), [Ancestor, Cold]);
    }

    #[test]
    fn background_work_restores_or_fails_and_never_migrates() {
        let cache_only = Found {
            cache_only: true,
            own: Own::Usable,
            store: true,
            ..found()
        };
        assert_eq!(
            steps(cache_only),
            [RestoreOwn, RestoreFromStore, NothingCached]
        );
        assert_eq!(
            steps(Found {
                own: Own::Absent,
                store: false,
                ..cache_only
            }),
            [NothingCached]
        );
        for f in [
            cache_only,
            Found {
                template: TemplateState::Stale,
                ..cache_only
            },
        ] {
            let s = steps(f);
            assert!(!s.contains(&Cold) && !s.contains(&Ancestor), "{s:?}");
        }
    }

    #[test]
    fn every_plan_ends_in_a_step_that_ends_the_build() {
        let templates = [
            TemplateState::Missing,
            TemplateState::NotOurs,
            TemplateState::Stale,
            TemplateState::Ready { foreign: false },
            TemplateState::Ready { foreign: true },
        ];
        for template in templates {
            for own in [Own::Absent, Own::TooNew, Own::Usable] {
                for bits in 0..16u8 {
                    let f = Found {
                        rebuild: bits & 1 != 0,
                        cache_only: bits & 2 != 0,
                        trust_unsigned: bits & 4 != 0,
                        store: bits & 8 != 0,
                        inputs_recorded: true,
                        template,
                        own,
                    };
                    let s = steps(f);
                    let last = *s.last().expect("a step");
                    assert!(
                        matches!(last, Ready | RefuseNotOurs | NothingCached | Cold),
                        "{f:?} → {s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_restore_goes_to_the_target_only_when_nobody_else_waits_for_the_template() {
        assert_eq!(after_restore(true, 0), AfterRestore::HandOut);
        assert_eq!(after_restore(true, 1), AfterRestore::Promote);
        assert_eq!(after_restore(false, 0), AfterRestore::Promote);
    }
}
