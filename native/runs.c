/*
 * runs.c - a commit's pages, taken as few contiguous runs.
 *
 * Why: dirty pages reach the file as one pwritev per contiguous run of page
 * ids, and fdatasync then sends the device one request per run. Taken one
 * at a time from the freelist (lowest id first, as bbolt does), a small
 * commit's pages land wherever free ids happen to be, so an image update
 * wrote 6 or 7 separate runs. On the virtual disks most containerd nodes
 * run on, syncing one run of 7 pages took about 2/3 of the wall time and
 * CPU of syncing 7 scattered ones. So a commit estimates how many pages it
 * will write, takes a run of free pages that long (the shortest that fits,
 * so long runs stay whole for multi-page nodes; or the end of the file),
 * hands pages out of it in order, moves to another run only when one is
 * used up, and gives back what is left.
 *
 * Not every page belongs in a run. A commit that changes one image writes
 * two kinds of page: the few near the top of the tree (the root, v1 and
 * namespace bucket pages, the images bucket's root branch, the freelist),
 * which the next commit rewrites and frees again, and the record's own page
 * and its leaf in the images bucket, which stay put until a later change
 * happens to land on them. Put together, the long-lived pages punch holes
 * into every run the moment the rest of it is freed, so after a while no
 * free run is long enough and every page is taken alone. So only a leaf
 * read from a page the last commit wrote goes into the runs, with the
 * freelist, and the next commit but one frees that run whole and takes it
 * again; a new node (a new record's page) and one the last commit did not
 * write take their pages alone, as bbolt would, filling the holes. (After a
 * commit too big to remember, every page goes into the runs, as before.)
 * Branches are the exception: with 10,000 images the images bucket has a
 * middle level of a dozen branches, one of which every update rewrites,
 * and taken alone it cost a device request per commit. A branch written in
 * one of the last RUN_RECENT_COMMITS commits goes into the run: it pins
 * its place there for a few commits at most, and with one such branch per
 * subtree the places pinned at once stay few. Leaves get no such grace: a
 * leaf a few commits old is as likely a busy bucket's leaf that the next
 * commits leave alone, pinning a run for hundreds of commits.
 *
 * Only which free ids are chosen changes: pages, freelist and meta are
 * written exactly as before, and a rollback gives back every page taken.
 */

#include "err.h"
#include "freelist.h"
#include "node.h"
#include "runs.h"
#include "tx.h"

/* Commits expected to write more pages than this allocate as before. */
#define RUN_MAX_PAGES 256u
/* A freelist longer than this is not searched for runs (the search is
 * linear in the number of free ids). */
#define RUN_SCAN_MAX_IDS 65536u
/* A run comes from the end of the file, when the freelist has none long
 * enough, only while fewer free pages than this (or than the file's pages
 * / RUN_FREE_SHARE) are left aside; past that, a commit without a fitting
 * free run takes its pages one by one as before, so the file gains at most
 * that much for the sake of runs. */
#define RUN_FREE_SLACK 256u
#define RUN_FREE_SHARE 64u
/* A run this short comes from the end of the file whenever no free run is
 * long enough, however much free space lies about in shorter pieces: only
 * new pages and pages the next commits rewrite go into runs, so such a run
 * is freed whole soon and taken again, and the file grows by a few runs
 * once, not by a run per commit. */
#define RUN_END_SMALL_PAGES 16u
/* Pages a dirty node's bucket may add at spill: its parents' pages, whose
 * nodes are made only then. */
#define RUN_PARENT_PAGES 3u
/* A run taken for the rest of a commit is at least this long. */
#define RUN_MIN_PAGES 2u

/* A learned estimate (the pages the last commit took from runs) replaces
 * the computed one only within this factor of it: a small commit after a
 * bulk one should not go looking for a bulk-sized run, nor the reverse. */
#define RUN_LEARNED_MAX_FACTOR 4u

static int commit_wrote(const run_commit *c, uint64_t pgid)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->ids[mid] < pgid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->n && c->ids[lo] == pgid;
}

static int recent_has(const run_memory *m, uint64_t pgid, unsigned commits)
{
    for (unsigned i = 0; i < commits; i++)
        if (commit_wrote(&m->last[(m->newest + RUN_RECENT_COMMITS - i) % RUN_RECENT_COMMITS], pgid))
            return 1;
    return 0;
}

enum run_place run_place_for(const bolt_tx *tx, const node *n)
{
    const run_memory *m = &tx->db->runs;
    /* After a commit too big to remember, nothing is known to be cold. */
    if (m->overflow)
        return RUN_PLACE_RUN;
    if (n->pgid == 0)
        return RUN_PLACE_SINGLE;
    /* A leaf counts as hot only when the last commit wrote it too: a leaf
     * a few commits old is, as often as not, a busy bucket's leaf that the
     * next commits leave alone. A branch is rewritten whenever any leaf
     * under it is, so one written in the last few commits is soon written
     * again (the middle level of a large images bucket: one of its dozen
     * branches in every update). */
    return recent_has(m, n->pgid, n->leaf ? 1u : RUN_RECENT_COMMITS) ? RUN_PLACE_RUN : RUN_PLACE_SINGLE;
}

void run_remember(bolt_db *db, const bolt_tx *tx)
{
    run_memory *m = &db->runs;
    m->hot_pages = tx->run_served;
    m->overflow = tx->ndirty > RUN_RECENT_MAX;
    m->newest = (m->newest + 1) % RUN_RECENT_COMMITS;
    run_commit *c = &m->last[m->newest];
    c->n = 0;
    if (m->overflow) {
        /* Everything goes into runs for the next commit; the older
         * commits' ids would only describe pages this one rewrote. */
        for (unsigned i = 0; i < RUN_RECENT_COMMITS; i++)
            m->last[i].n = 0;
        return;
    }
    for (size_t i = 0; i < tx->ndirty; i++)
        c->ids[c->n++] = tx->dirty[i].pgid; /* write_dirty sorted them */
}

/* Pages spilling this tx's nodes may write into runs. A node that fits a
 * page writes one; a bigger one is cut into pieces of at least half a page
 * (bbolt's fill rule), each rounded up to whole pages; a node that takes
 * its page alone adds only its parents. *least: the pages the nodes known
 * now write into runs at the least (a run that short is still worth
 * taking). */
static uint64_t commit_page_estimate(const bolt_tx *tx, uint64_t *least)
{
    uint64_t est = 0, lo = 0;
    for (size_t i = 0; i < tx->nnodes; i++) {
        const node *n = tx->nodes[i];
        if (n->dead)
            continue;
        est += RUN_PARENT_PAGES;
        if (run_place_for(tx, n) != RUN_PLACE_RUN)
            continue;
        uint64_t pages = (n->size + tx->ps - 1) / tx->ps;
        est += pages <= 1 ? 1 : 3 * pages + 1;
        lo += pages ? pages : 1;
    }
    *least = lo;
    return est;
}

static int max_pages_ok(const bolt_tx *tx, uint64_t end)
{
    return end <= (UINT64_MAX / tx->ps) / 2;
}

/* Take a new run for `want` pages, or at least `least`: the shortest free
 * run of `want`, else of `least` (all of it), else the end of the file
 * while that is allowed. 1 when taken. */
static int run_new(bolt_tx *tx, uint64_t want, uint64_t least)
{
    bolt_db *db = tx->db;
    uint64_t start = 0;
    if (least > want)
        least = want;
    pthread_mutex_lock(&db->mu);
    size_t nfree = fl_free_count(&db->fl);
    int scan = nfree >= least && nfree <= RUN_SCAN_MAX_IDS;
    int found = scan && fl_find_run(&db->fl, (size_t)want, &start);
    int small = want <= RUN_END_SMALL_PAGES;
    if (!found && scan && !small && least < want && fl_find_run(&db->fl, (size_t)least, &start)) {
        found = 1;
        want = fl_run_length(&db->fl, start, (size_t)want);
    }
    int took = found && fl_take_run(&db->fl, start, (size_t)want);
    pthread_mutex_unlock(&db->mu);
    if (took) {
        size_t index;
        if (tx_note_alloc(tx, start, want, &index)) {
            /* the tx has failed; put the pages back so the freelist stays whole */
            pthread_mutex_lock(&db->mu);
            (void)fl_give_back_run(&db->fl, start, (size_t)want);
            pthread_mutex_unlock(&db->mu);
            return 0;
        }
        tx->run_alloc = index;
        tx->run_next = start;
        tx->run_end = start + want;
        return 1;
    }
    if ((small || nfree < RUN_FREE_SLACK || nfree < tx->pgid / RUN_FREE_SHARE) && max_pages_ok(tx, tx->pgid + want)) {
        tx->run_alloc = SIZE_MAX;
        tx->run_next = tx->pgid;
        tx->run_end = tx->pgid + want;
        tx->pgid += want;
        return 1;
    }
    return 0;
}

/* Give back [run_next, run_end) of the current run. */
static int run_give_back_rest(bolt_tx *tx)
{
    uint64_t from = tx->run_next, to = tx->run_end;
    size_t rec = tx->run_alloc;
    tx->run_next = tx->run_end = 0;
    tx->run_alloc = SIZE_MAX;
    if (from >= to)
        return BOLT_OK;
    if (rec == SIZE_MAX) {
        /* From the end of the file, and nothing was taken after it: while
         * such a run is current every allocation is served from it,
         * extending it in place when it is too short. End the file earlier. */
        if (to != tx->pgid)
            return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "commit run left behind the end of the file"));
        tx->pgid = from;
        return BOLT_OK;
    }
    tx->allocs[rec + 1] -= to - from; /* a rollback gives back only what was used */
    bolt_db *db = tx->db;
    pthread_mutex_lock(&db->mu);
    int rc = fl_give_back_run(&db->fl, from, (size_t)(to - from));
    pthread_mutex_unlock(&db->mu);
    return rc ? tx_fail(tx, rc) : BOLT_OK;
}

/* Make room for `more` pages at the end of the current run, in place. */
static int run_extend(bolt_tx *tx, uint64_t more)
{
    if (tx->run_alloc == SIZE_MAX) {
        if (tx->run_end != tx->pgid || !max_pages_ok(tx, tx->pgid + more))
            return 0;
        tx->pgid += more;
        tx->run_end += more;
        return 1;
    }
    bolt_db *db = tx->db;
    pthread_mutex_lock(&db->mu);
    int took = fl_take_run(&db->fl, tx->run_end, (size_t)more);
    pthread_mutex_unlock(&db->mu);
    if (!took)
        return 0;
    tx->allocs[tx->run_alloc + 1] += more;
    tx->run_end += more;
    return 1;
}

void run_begin(bolt_tx *tx)
{
    tx->run_active = 0;
    tx->run_next = tx->run_end = 0;
    tx->run_alloc = SIZE_MAX;
    tx->run_served = 0;
    uint64_t least = 0;
    uint64_t est = commit_page_estimate(tx, &least);
    if (est == 0 || est > RUN_MAX_PAGES)
        return;
    bolt_db *db = tx->db;
    pthread_mutex_lock(&db->mu);
    /* the freelist page(s), with room for the ids this commit frees */
    uint64_t fl_pages = (fl_page_bytes(&db->fl) + 16 * est) / tx->ps + 1;
    pthread_mutex_unlock(&db->mu);
    est += fl_pages;
    least += fl_pages;
    /* Near enough, what the last commit took is the better guess: the
     * estimate counts parents every node may have, most of which are
     * shared (the freelist pages are counted in both). */
    uint64_t learned = db->runs.hot_pages;
    if (learned && learned >= least && learned <= est * RUN_LEARNED_MAX_FACTOR &&
        learned * RUN_LEARNED_MAX_FACTOR >= est)
        est = learned;
    tx->run_want = est;
    tx->run_active = run_new(tx, est, least);
}

int run_take(bolt_tx *tx, uint64_t npages, uint64_t *id)
{
    if (!tx->run_active)
        return 0;
    uint64_t room = tx->run_end - tx->run_next;
    if (npages > room && !run_extend(tx, npages - room)) {
        /* A multi-page node that does not fit is allocated as before (the
         * run stays for the pages after it); a single page moves on to a
         * new run for the rest of the commit. */
        if (npages > 1)
            return 0;
        uint64_t want = tx->run_want > RUN_MIN_PAGES ? tx->run_want : RUN_MIN_PAGES;
        if (run_give_back_rest(tx) || !run_new(tx, want, RUN_MIN_PAGES)) {
            tx->run_active = 0;
            return 0;
        }
    }
    *id = tx->run_next;
    tx->run_next += npages;
    tx->run_served += npages;
    tx->run_want = tx->run_want > npages ? tx->run_want - npages : 0;
    return 1;
}

int run_finish(bolt_tx *tx)
{
    tx->run_active = 0;
    return run_give_back_rest(tx);
}
