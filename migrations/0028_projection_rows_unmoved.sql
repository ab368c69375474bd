-- 0028_projection_rows_unmoved: the check that lets a live projection batch write without a
-- transaction of its own. The batch reads its rows (and their xmin) in one statement, folds them,
-- and writes them in a second statement that updates each row only where its xmin is still the
-- one read, and inserts a row only where none has appeared since. The statement ends with this
-- call: when fewer rows were written than the batch folded, something changed them in between (a
-- rebuild's swap or merge, a new owner of the partition), the statement is aborted with nothing
-- written, and the batch is applied again in a transaction that locks its rows. SQLSTATE 40001 is
-- the one PostgreSQL itself raises for a lost race of this kind.
create function projection_rows_unmoved(expected bigint, written bigint) returns boolean
    language plpgsql
as $$
begin
    if written <> expected then
        raise exception 'a projection batch''s rows changed between its read and its write (% of % written)',
            written, expected
            using errcode = 'serialization_failure';
    end if;
    return true;
end
$$;
