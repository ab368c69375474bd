use super::retarget;

#[test]
fn definitions_are_pointed_at_the_new_tables_and_only_at_them() {
    let tables = ["contacts", "sessions"];
    let cases = [
        (
            "CREATE INDEX contacts_email_idx ON public.contacts USING btree (email)",
            "CREATE INDEX contacts_email_idx ON replay_x.contacts USING btree (email)",
        ),
        (
            "alter table public.sessions add constraint sessions_contact_id_fkey FOREIGN KEY \
             (contact_id) REFERENCES public.contacts(id) DEFERRABLE not valid",
            "alter table replay_x.sessions add constraint sessions_contact_id_fkey FOREIGN KEY \
             (contact_id) REFERENCES replay_x.contacts(id) DEFERRABLE not valid",
        ),
        (
            "grant SELECT on public.contacts to ventros_app",
            "grant SELECT on replay_x.contacts to ventros_app",
        ),
        // Another table whose name starts like a rebuilt one, and one that is not rebuilt.
        (
            "alter table public.contacts_archive add constraint k FOREIGN KEY (p) \
             REFERENCES public.projects(id) not valid",
            "alter table public.contacts_archive add constraint k FOREIGN KEY (p) \
             REFERENCES public.projects(id) not valid",
        ),
    ];
    for (read, expected) in cases {
        assert_eq!(retarget(read, "replay_x", &tables), expected);
    }
}
